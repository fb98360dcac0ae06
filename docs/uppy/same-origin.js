// Uppy 6 (@uppy/aws-s3 6.x) on a page served by this site, signed in with Django's session.
// Uppy talks to this API's Companion contract by itself; the page only confirms each upload.
import Uppy from '@uppy/core'
import AwsS3 from '@uppy/aws-s3'

export function startUppy({ api = '/api/v1', onUploaded = () => {}, uppyOptions = {}, awsS3Options = {} } = {}) {
  const uppy = new Uppy(uppyOptions)
  // Only this option is needed: files up to 100 MiB go up in one request, larger ones in parts.
  uppy.use(AwsS3, { companionEndpoint: api, ...awsS3Options })

  // Uppy keeps the object key of an upload; the API verifies the stored file and records it.
  uppy.on('upload-success', async (file, response) => {
    const answer = await fetch(`${api}/s3/confirm`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ key: response.body.key }),
    })
    const upload = await answer.json()
    if (!answer.ok) {
      uppy.info({ message: `Failed to upload ${file.name}`, details: upload.message }, 'error', 10000)
      return
    }
    onUploaded(file, upload) // upload.id, upload.status === 'uploaded', upload.url (download)
  })
  return uppy
}
