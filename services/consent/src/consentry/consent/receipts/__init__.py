"""Receipts: signed consent receipts (JWS, Ed25519) and each tenant's receipt keys and JWKS."""
