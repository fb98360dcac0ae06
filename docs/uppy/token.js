// Uppy 6 (@uppy/aws-s3 6.x) with an API token, from any origin listed in CORS_ALLOWED_ORIGINS.
// `signRequest` asks this API to sign every S3 request; the file bytes go straight to S3.
import Uppy from '@uppy/core'
import AwsS3 from '@uppy/aws-s3'

export function startUppy({ api, token, onUploaded = () => {}, uppyOptions = {}, awsS3Options = {} }) {
  const uppy = new Uppy(uppyOptions)

  async function call(path, body) {
    const answer = await fetch(`${api}${path}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Authorization: `Token ${token}` },
      body: JSON.stringify(body),
    })
    const json = await answer.json()
    if (!answer.ok) throw new Error(json.message) // Uppy shows it: "Failed to upload <name>"
    return json
  }

  uppy.use(AwsS3, {
    // Uppy hands this key to signRequest when an upload starts: the file's id finds the file,
    // whose name, type and size the API validates (the API then chooses the real key).
    generateObjectKey: (file) => file.id,
    signRequest: (request) => {
      const file = request.uploadId ? undefined : uppy.getFile(request.key)
      const upload = file ? { filename: file.name, type: file.type, size: file.size } : {}
      return call('/s3/presign', { ...request, ...upload })
    },
    ...awsS3Options,
  })

  uppy.on('upload-success', async (file, response) => {
    try {
      onUploaded(file, await call('/s3/confirm', { key: response.body.key }))
    } catch (error) {
      uppy.info({ message: `Failed to upload ${file.name}`, details: error.message }, 'error', 10000)
    }
  })
  return uppy
}
