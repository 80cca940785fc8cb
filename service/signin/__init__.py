"""Signing in: passwords, MFA challenges, step-up, lockout, rate limits and the Directory
Insights records of every attempt. See docs/signin.md."""
