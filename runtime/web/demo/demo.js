// Embeds widget.js for the agent named in ?agent=PUBLIC_ID, the way a tenant's page does.
"use strict";

const agent = new URLSearchParams(location.search).get("agent") || "";
document.getElementById("demo-agent").textContent = agent || "(none)";
if (agent) {
  const script = document.createElement("script");
  script.src = "/widget.js";
  script.dataset.agent = agent;
  script.async = true;
  document.body.append(script);
  document.getElementById("demo-snippet").textContent =
    `<script src="${location.origin}/widget.js" data-agent="${agent}" async></script>`;
  document.getElementById("demo-status").textContent = "Press the call button in the corner.";
} else {
  document.getElementById("demo-status").textContent = "Add ?agent=PUBLIC_ID to this page's address.";
}
