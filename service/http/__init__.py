"""What every HTTP entrypoint shares (the API, the portals' pages and the webhook receivers and
SCIM server): the request's wired services and actor, error bodies, and input parsing."""
