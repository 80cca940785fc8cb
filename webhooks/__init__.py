"""Inbound integrations: the SCIM 2.0 server and the HR / directory-change webhook receivers.
They authenticate, validate and translate outside payloads into commands; no business rule
lives here."""
