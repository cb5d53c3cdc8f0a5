// GOV.UK Frontend's components (error summary focus, double-click prevention, conditional reveals).
// The pages work without it: this only improves them.
import { initAll } from "/static/govuk/govuk-frontend.min.js";

initAll();

// A conditional reveal's radio keeps `aria-controls` (it names the questions it shows) but not the
// `aria-expanded` GOV.UK Frontend gives it: ARIA allows no expanded state on a radio (axe-core's
// aria-allowed-attr), and the revealed questions follow the radio in reading order anyway.
const radios = document.querySelectorAll('.govuk-radios input[type="radio"][aria-controls]');
const dropExpanded = (input) => input.removeAttribute("aria-expanded");
radios.forEach(dropExpanded);
const watcher = new MutationObserver((changes) => changes.forEach((change) => dropExpanded(change.target)));
radios.forEach((input) => watcher.observe(input, { attributes: true, attributeFilter: ["aria-expanded"] }));
