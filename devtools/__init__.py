"""Development and test tools: local provider stand-ins, the dev server with in-process jobs, a
Cloudinary notification signer. Never imported by backend/."""
