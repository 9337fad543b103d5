// The console's only script: live updates of a prediction's page (a run's DAG) from
// the server-sent events of /ui/predictions/{id}/events. No framework, no network
// beyond this server; the session cookie is HttpOnly, so nothing here can read it.
"use strict";
(function () {
  const subject = document.getElementById("subject");
  if (!subject || subject.dataset.terminal !== "no" || !window.EventSource) {
    return;
  }
  const source = new EventSource(subject.dataset.events);
  function stepUpdate(update) {
    const name = CSS.escape(update.step);
    const node = document.querySelector('g.node[data-step="' + name + '"]');
    if (node) {
      node.setAttribute("class", "node st-" + update.status);
      const state = node.querySelector("text.state");
      if (state) {
        state.textContent = update.status;
      }
    }
    const cell = document.querySelector('tr[data-step-row="' + name + '"] .step-status');
    if (cell) {
      cell.textContent = update.status;
    }
  }
  source.addEventListener("update", function (event) {
    const update = JSON.parse(event.data);
    if (update.step) {
      stepUpdate(update);
      return;
    }
    const badge = document.getElementById("status");
    if (badge) {
      badge.textContent = update.status;
      badge.setAttribute("class", "badge st-" + update.status);
    }
    if (update.final) {
      source.close();
      window.location.reload();  // the finished page: output, error, timings
    }
  });
})();
