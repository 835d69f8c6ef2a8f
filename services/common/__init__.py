"""What the routers share: OGC links and negotiation, typed state, errors, HTML, headers, limits, middleware."""
