// The page script of tests/e2e/test_uppy_aws_s3.py: the real @uppy/core + @uppy/aws-s3, configured
// exactly as docs/uppy.md tells an integrator to, exposed to the test as window.uppyHarness.
// Built by esbuild into dist/uppy-harness.js (not committed) when the test runs.
import Uppy from '@uppy/core'
import AwsS3 from '@uppy/aws-s3'

const MiB = 1024 * 1024

function start({ endpoint, token }) {
  const events = []
  const uppy = new Uppy({ autoProceed: false })
  // docs/uppy.md: Uppy does not send the file size to Companion; we need it.
  uppy.on('file-added', (file) => uppy.setFileMeta(file.id, { size: file.size }))
  uppy.use(AwsS3, {
    endpoint,
    shouldUseMultipart: true,
    getChunkSize: (file) => Math.max(5 * MiB, Math.ceil(file.size / 10000 / MiB) * MiB),
    allowedMetaFields: ['name', 'type', 'size'],
    headers: { Authorization: `Token ${token}` },
  })
  uppy.on('upload-success', (file, response) =>
    events.push({ type: 'upload-success', name: file.name, status: response.status,
      uploadURL: response.uploadURL, body: response.body }))
  uppy.on('upload-error', (file, error) =>
    events.push({ type: 'upload-error', name: file && file.name, message: error && error.message }))
  uppy.on('s3-multipart:part-uploaded', (file, part) =>
    events.push({ type: 'part-uploaded', name: file.name, part: { PartNumber: part.PartNumber, ETag: part.ETag } }))
  uppy.on('info-visible', () => {
    const { info } = uppy.getState()
    for (const i of info) events.push({ type: 'info', level: i.type, message: i.message, details: i.details })
  })

  async function upload(url, name, type) {
    const blob = await (await fetch(url)).blob()
    const id = uppy.addFile({ name, type, data: new File([blob], name, { type }), source: 'test' })
    const result = await uppy.upload()
    const file = uppy.getFile(id)
    return {
      successful: result.successful.map((f) => f.name),
      failed: result.failed.map((f) => ({ name: f.name, error: f.error })),
      file: { error: file.error || null, meta: { size: file.meta.size }, s3Multipart: file.s3Multipart || null },
    }
  }

  return { uppy, events, upload }
}

window.uppyHarness = { start }
window.uppyHarnessReady = true
