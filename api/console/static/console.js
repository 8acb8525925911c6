// The console's few lines of script: live regions that refresh themselves while something is
// in flight, and confirmations before an action. Pages work without it (a reload shows the same).
"use strict";

(function () {
  const DEFAULT_INTERVAL_MS = 1500;

  // An element with data-poll="URL" is replaced by what URL returns (the same element, freshly
  // rendered), every data-poll-interval ms; the server leaves data-poll out once nothing is in
  // flight any more, which ends the polling.
  function schedule(element) {
    const interval = Number(element.dataset.pollInterval || DEFAULT_INTERVAL_MS);
    window.setTimeout(function () { refresh(element); }, interval);
  }

  async function refresh(element) {
    if (!element.isConnected) return;
    if (document.hidden) { schedule(element); return; }
    let response;
    try {
      response = await fetch(element.dataset.poll, {
        credentials: "same-origin",
        headers: { "Accept": "text/html", "X-Console-Fragment": "1" },
      });
    } catch (_) {
      schedule(element);  // the network blinked: try again later
      return;
    }
    if (response.status === 401) {
      window.location.assign("/console/sign-in?next=" + encodeURIComponent(window.location.pathname + window.location.search));
      return;
    }
    if (!response.ok) { schedule(element); return; }
    const html = await response.text();
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    const fresh = template.content.firstElementChild;
    if (!fresh) return;
    // Keep keyboard focus where it was when the focused control is re-rendered.
    const focusedId = document.activeElement && document.activeElement.id;
    element.replaceWith(fresh);
    keepTyped(element, fresh);
    if (focusedId) {
      const again = document.getElementById(focusedId);
      if (again) again.focus();
    }
    start(fresh);
  }

  // What the operator is typing survives a refresh: editable controls of the fresh element
  // take the values their namesakes (same id) had.
  function keepTyped(old, fresh) {
    old.querySelectorAll("input:not([type=hidden]), textarea, select").forEach(function (control) {
      if (!control.id) return;
      const twin = document.getElementById(control.id);
      if (!twin || !fresh.contains(twin) || twin.tagName !== control.tagName) return;
      if (control.type === "checkbox" || control.type === "radio") twin.checked = control.checked;
      else twin.value = control.value;
    });
  }

  function start(root) {
    if (root.matches && root.matches("[data-poll]")) schedule(root);
    root.querySelectorAll("[data-poll]").forEach(schedule);
  }

  // A form with data-confirm="question" asks before it is sent.
  document.addEventListener("submit", function (event) {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm) {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    }
  });

  document.addEventListener("DOMContentLoaded", function () { start(document.body); });
})();
