/* propcrm: starts Swagger UI on /docs over the app's OpenAPI document.
 *
 * A file, not an inline script, because the app's Content Security Policy allows scripts from this site
 * only (script-src 'self'); Swagger UI itself is served from /static/vendor (npm swagger-ui-dist, copied by
 * `make`). The page names the document in <div id="swagger-ui" data-openapi-url="…">.
 */
(function () {
  "use strict";
  function start() {
    var root = document.getElementById("swagger-ui");
    if (!root || typeof window.SwaggerUIBundle !== "function") return;
    window.ui = window.SwaggerUIBundle({
      url: root.dataset.openapiUrl,
      dom_id: "#swagger-ui",
      layout: "BaseLayout",
      presets: [window.SwaggerUIBundle.presets.apis],
      deepLinking: true,
      showExtensions: true,
      showCommonExtensions: true,
      validatorUrl: null, // never send the document to a third-party validator
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
