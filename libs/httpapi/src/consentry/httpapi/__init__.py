"""HTTP API plumbing shared by consentry services.

RFC 9457 problem details for every error (`problems`), API-key authentication with tenant
and scopes (`auth`), a request log that records route templates instead of raw paths, so no
subject identifier reaches the logs (`middleware`), health endpoints and the uvicorn runner
(`server`), the error contract in each service's OpenAPI (`openapi`), and, for test suites,
schemathesis fuzzing and mass-assignment probes (`testing`).
"""
