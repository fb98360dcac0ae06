// Demo page glue: refresh the server-rendered uploads list when the widget finishes a file,
// and delete through the REST API (DELETE -> 202, the provider delete runs as a job).
const list = document.getElementById("uploads");
const widget = document.getElementById("widget");

function csrfToken() {
  return widget ? widget.getAttribute("csrf-token") : "";
}

async function refresh() {
  const response = await fetch(list.dataset.fragmentUrl, { credentials: "same-origin" });
  if (response.ok) {
    // Server-rendered by Django's template engine (auto-escaped), not built from user input here.
    list.innerHTML = await response.text();
  }
}

if (widget && list) {
  widget.addEventListener("upload:done", refresh);
  widget.addEventListener("upload:error", refresh);
  // A cancelled upload's row (pending, deletable) shows at once: as soon as the server knows.
  widget.addEventListener("upload:cancel", (event) => {
    Promise.resolve(event.detail.aborted).finally(refresh);
  });
  list.addEventListener("click", async (event) => {
    const button = event.target.closest(".demo-delete");
    if (!button) return;
    button.disabled = true;
    const response = await fetch(`/api/v1/uploads/${button.dataset.uploadId}/`, {
      method: "DELETE",
      credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
    });
    if (!response.ok) {
      let message = `Delete failed (${response.status})`;
      try {
        message = (await response.json()).error.message || message;
      } catch {
        // keep the status line
      }
      window.alert(message);
    }
    await refresh();
  });
}
