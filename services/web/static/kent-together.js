// GOV.UK Frontend's components (error summary focus, double-click prevention, conditional reveals).
// The pages work without it: this only improves them.
import { initAll } from "/static/govuk/govuk-frontend.min.js";

initAll();
