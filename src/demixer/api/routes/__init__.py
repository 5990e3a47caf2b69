"""The API's routers, one per resource: models, files, queue requests, signed blobs."""
