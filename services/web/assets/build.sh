#!/bin/sh
# Build the web front's assets from the npm packages pinned in services/web/package.json:
# GOV.UK Frontend's Sass with Arial (no GDS Transport, no crown) into static/kent-together.css,
# its JavaScript and the images its CSS uses into static/govuk/. The result is committed, so
# `make run` needs no Node.js; run `make assets` after changing the pin or assets/*.scss.
set -eu
cd "$(dirname "$0")/.."
npm ci --no-audit --no-fund --loglevel=error
dist=node_modules/govuk-frontend/dist/govuk
npx sass --pkg-importer=node --style=compressed --no-source-map assets/kent-together.scss static/kent-together.css
rm -rf static/govuk && mkdir -p static/govuk
cp "$dist/govuk-frontend.min.js" static/govuk/
cp node_modules/govuk-frontend/package.json static/govuk/package.json
echo "built static/ from govuk-frontend $(node -p 'require("./node_modules/govuk-frontend/package.json").version')"
