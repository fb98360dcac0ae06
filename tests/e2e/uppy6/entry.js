// The page script of tests/e2e/test_uppy6_aws_s3.py: the page code of docs/uppy/ (imported
// as is, so the tests run exactly what docs/uppy.md shows) with the real @uppy/core and
// @uppy/aws-s3 6.x, plus recorders the tests read. Bundled by esbuild when the tests run.
import { startUppy as startSameOrigin } from '../../../docs/uppy/same-origin.js'
import { startUppy as startToken } from '../../../docs/uppy/token.js'

function start(mode, options = {}) {
  const events = []
  const onUploaded = (file, upload) => events.push({ type: 'uploaded', name: file.name, upload })
  const starter = mode === 'token' ? startToken : startSameOrigin
  const { multipartAbove, ...rest } = options
  if (multipartAbove != null) {
    rest.awsS3Options = { ...rest.awsS3Options, shouldUseMultipart: (file) => file.size > multipartAbove }
  }
  const uppy = starter({ ...rest, onUploaded })
  uppy.on('upload-success', (file, response) =>
    events.push({ type: 'upload-success', name: file.name, uploadURL: response.uploadURL, body: response.body }))
  uppy.on('upload-error', (file, error) =>
    events.push({ type: 'upload-error', name: file && file.name, message: error && error.message }))
  uppy.on('s3-multipart:part-uploaded', (file, part) =>
    events.push({ type: 'part-uploaded', name: file.name, part: { PartNumber: part.PartNumber, ETag: part.ETag } }))
  uppy.on('info-visible', () => {
    for (const i of uppy.getState().info) events.push({ type: 'info', level: i.type, message: i.message, details: i.details })
  })

  async function add(url, name, type) {
    const blob = await (await fetch(url)).blob()
    return uppy.addFile({ name, type, data: new File([blob], name, { type }), source: 'test' })
  }

  // Starts the upload without waiting for it: `window.harness.done` settles with its result.
  function begin() {
    window.harness.done = uppy.upload().then((result) => ({
      successful: result ? result.successful.map((f) => f.name) : [],
      failed: result ? result.failed.map((f) => ({ name: f.name, error: f.error })) : [],
    }))
  }

  return { uppy, events, add, begin }
}

window.uppyHarness = { start }
window.uppyHarnessReady = true
