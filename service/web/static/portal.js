// adminlink portals: the few things a page cannot do without script. WebAuthn ceremonies
// (navigator.credentials), the push waiting page's polling, and the warning dialogs. Loaded as
// a file (the CSP allows no inline script); every call carries the page's CSRF token.
"use strict";

(function () {
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

  const toBytes = (b64url) => {
    const b64 = b64url.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((b64url.length + 3) % 4);
    return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  };
  const toB64url = (buffer) => {
    if (!buffer) return null;
    let text = "";
    new Uint8Array(buffer).forEach((b) => { text += String.fromCharCode(b); });
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  };

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf() },
      body: JSON.stringify(body || {}),
    });
    let data = {};
    try { data = await response.json(); } catch (ignored) { data = {}; }
    if (!response.ok) {
      const error = new Error(data.error || "Something went wrong. Try again.");
      error.code = data.code;
      throw error;
    }
    return data;
  }

  function showError(element, message) {
    if (!element) return;
    element.textContent = message;
    element.hidden = false;
  }

  // --- WebAuthn ------------------------------------------------------------------------------

  function requestOptions(options) {
    const publicKey = Object.assign({}, options, { challenge: toBytes(options.challenge) });
    publicKey.allowCredentials = (options.allowCredentials || []).map(
      (c) => Object.assign({}, c, { id: toBytes(c.id) }));
    return publicKey;
  }

  function creationOptions(options) {
    const publicKey = Object.assign({}, options, { challenge: toBytes(options.challenge) });
    publicKey.user = Object.assign({}, options.user, { id: toBytes(options.user.id) });
    publicKey.excludeCredentials = (options.excludeCredentials || []).map(
      (c) => Object.assign({}, c, { id: toBytes(c.id) }));
    return publicKey;
  }

  function assertionJSON(credential) {
    const r = credential.response;
    return {
      id: credential.id, rawId: toB64url(credential.rawId), type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: {
        clientDataJSON: toB64url(r.clientDataJSON), authenticatorData: toB64url(r.authenticatorData),
        signature: toB64url(r.signature), userHandle: toB64url(r.userHandle),
      },
    };
  }

  function attestationJSON(credential) {
    const r = credential.response;
    return {
      id: credential.id, rawId: toB64url(credential.rawId), type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      clientExtensionResults: credential.getClientExtensionResults(),
      response: {
        clientDataJSON: toB64url(r.clientDataJSON), attestationObject: toB64url(r.attestationObject),
        transports: r.getTransports ? r.getTransports() : [],
      },
    };
  }

  const ceremonyFailed = (error) => (error && error.name === "NotAllowedError"
    ? "The authenticator did not answer, or the request was cancelled. Try again."
    : (error && error.message) || "Something went wrong. Try again.");

  // A WebAuthn button: disabled while its ceremony runs, then on to the answer's redirect, or the
  // error said next to it and the button enabled again.
  function onCeremony(button, ceremony) {
    button.addEventListener("click", async () => {
      const errors = document.getElementById(button.getAttribute("aria-describedby"));
      button.disabled = true;
      try {
        const done = await ceremony();
        window.location.assign(done.redirect);
      } catch (error) {
        showError(errors, ceremonyFailed(error));
        button.disabled = false;
      }
    });
  }

  function onWebauthnGet(button) {
    const factor = button.dataset.webauthnGet;
    onCeremony(button, async () => {
      const started = await post(button.dataset.options, { factor: factor });
      const credential = await navigator.credentials.get({ publicKey: requestOptions(started.options) });
      return post(button.dataset.complete, { factor: factor, credential: assertionJSON(credential) });
    });
  }

  function onWebauthnCreate(button) {
    onCeremony(button, async () => {
      const nameField = document.getElementById("authenticator-name");
      const started = await post(button.dataset.options, { type: button.dataset.webauthnCreate });
      const credential = await navigator.credentials.create({ publicKey: creationOptions(started.options) });
      return post(button.dataset.complete, {
        credential: attestationJSON(credential), name: nameField ? nameField.value : "",
      });
    });
  }

  function onGo(button) {
    onCeremony(button, async () => {
      const started = await post(button.dataset.goOptions, {});
      const credential = await navigator.credentials.get({ publicKey: requestOptions(started.options) });
      return post(button.dataset.goComplete, { credential: assertionJSON(credential) });
    });
  }

  // --- push: poll until the phone answers ----------------------------------------------------

  function pollPush(section) {
    const state = document.getElementById("push-state");
    const tick = async () => {
      try {
        const answer = await post(section.dataset.pushStatus, {});
        if (answer.status === "pending") { setTimeout(tick, 1000); return; }
        if (answer.status === "approved") {
          state.textContent = "Approved. Signing you in…";
          section.dataset.state = "approved";
          window.location.assign(answer.redirect);
          return;
        }
        section.dataset.state = answer.status;
        state.textContent = answer.message;
      } catch (error) {
        section.dataset.state = "error";
        state.textContent = error.message;
      }
    };
    setTimeout(tick, 500);
  }

  // --- warning dialogs -----------------------------------------------------------------------

  function onDialog(button) {
    button.addEventListener("click", () => {
      const dialog = document.getElementById(button.dataset.dialog);
      if (dialog) dialog.showModal();
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-webauthn-get]").forEach(onWebauthnGet);
    document.querySelectorAll("[data-webauthn-create]").forEach(onWebauthnCreate);
    document.querySelectorAll("[data-go-options]").forEach(onGo);
    document.querySelectorAll("[data-push-status]").forEach(pollPush);
    document.querySelectorAll("[data-dialog]").forEach(onDialog);
    document.querySelectorAll("[data-close-dialog]").forEach((button) => {
      button.addEventListener("click", () => button.closest("dialog").close());
    });
  });
}());
