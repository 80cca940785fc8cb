"""Local stand-ins for outside parties the tests talk to: authenticators, devices, Duo, browsers."""
