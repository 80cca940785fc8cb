"""MFA verifiers: TOTP (pyotp), WebAuthn (webauthn), push signatures (cryptography) and Duo
(duo-universal). Each checks one proof; the sign-in flows in ``service.signin`` decide what a
result means for the account."""
