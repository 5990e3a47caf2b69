"""The composition root: the API, the vendor routers and the delivery builders put together."""
