"""tuspy (from PyPI, unmodified) against starling's /files/ endpoint.

Uploads one 1 MiB chunk, stops as a client that lost its connection would,
then a new uploader resumes from the URL (it asks the broker for the offset
with HEAD) and sends the rest; the file is downloaded back and hashed.
Run by tests/files_clients.rs: python tuspy_upload.py ENDPOINT FILE
"""

import hashlib
import sys
import urllib.request

from tusclient import client

endpoint, path = sys.argv[1], sys.argv[2]
tus = client.TusClient(endpoint)

first = tus.uploader(path, chunk_size=1024 * 1024, metadata={"filename": "voice.ogg", "filetype": "audio/ogg"})
first.upload_chunk()
print("PAUSED", first.offset, flush=True)

resumed = tus.uploader(path, chunk_size=1024 * 1024, url=first.url)
print("RESUMED", resumed.offset, flush=True)
resumed.upload()

with urllib.request.urlopen(first.url) as response:
    print("DOWNLOADED", hashlib.sha256(response.read()).hexdigest(), flush=True)
