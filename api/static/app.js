// The dashboard's router: #/jobs, #/jobs/<id>, #/submit, #/sweeps, #/sweeps/<id>, #/policies, #/deployments.
// Each view returns a cleanup function that stops its timers and streams when the user navigates away.

import { forgetToken } from "./api.js";
import { deploymentsPage } from "./deployments.js";
import { h } from "./dom.js";
import { jobPage, jobsPage } from "./jobs.js";
import { policiesPage } from "./policies.js";
import { submitPage } from "./submit.js";
import { sweepPage, sweepsPage } from "./sweeps.js";

const view = document.getElementById("view");
let cleanup = null;

function route() {
  if (cleanup) cleanup();
  cleanup = null;
  view.replaceChildren();
  const hash = location.hash.replace(/^#\/?/, "") || "jobs";
  const [section, id] = hash.split("/").map(decodeURIComponent);
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === section);
  }
  const pages = { jobs: () => (id ? jobPage(view, id) : jobsPage(view)), submit: () => submitPage(view),
    sweeps: () => (id ? sweepPage(view, id) : sweepsPage(view)), policies: () => policiesPage(view),
    deployments: () => deploymentsPage(view) };
  const page = pages[section];
  if (!page) {
    view.append(h("p", { class: "error" }, `No page '${hash}'.`), h("a", { href: "#/jobs" }, "Jobs"));
    return;
  }
  cleanup = page();
}

document.getElementById("forget-token").addEventListener("click", () => {
  forgetToken();
  location.reload();
});
window.addEventListener("hashchange", route);
route();
