"""`python -m devtools.cloudinary_standin`: run the stand-in until interrupted."""

from devtools.cloudinary_standin import main

main()
