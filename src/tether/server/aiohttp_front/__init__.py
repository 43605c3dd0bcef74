"""The aiohttp front: the app, the WebSocket handler and the HTTP API over the server core."""
