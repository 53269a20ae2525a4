"""Envoy external authorization (`envoy.service.auth.v3.Authorization/Check`) over meshca's
policy engine: OK, or PERMISSION_DENIED with an HTTP 403 saying which policy denied."""
