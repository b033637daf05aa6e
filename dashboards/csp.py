"""Content-Security-Policy on every response: scripts only from our own static files.

Telemetry ends up in every page, so even if some escaping were missed, an injected
<script> or onclick="" would not run: no inline script, no eval, no other origin.
Plotly sets inline styles on the elements it draws, hence style-src 'unsafe-inline'.
"""

POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
          "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
          "frame-ancestors 'none'")


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response.setdefault("Content-Security-Policy", POLICY)
        response.setdefault("Referrer-Policy", "same-origin")
        response.setdefault("X-Content-Type-Options", "nosniff")
        return response
