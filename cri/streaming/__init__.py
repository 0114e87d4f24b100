"""Protocols of the CRI streaming server (SPDY/3.1, WebSocket channels); no grpc here."""
