"""Identity: accounts, login with MFA, sessions, and the OAuth 2 authorization server.

gRPC (shop.identity.v1.IdentityService) serves the mesh; the OAuth endpoints and the login and
device pages are HTTP, by their RFCs, on IDENTITY_HTTP_PORT (issuer http://127.0.0.1:8090).
"""
