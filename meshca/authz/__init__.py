"""Istio AuthorizationPolicy, evaluated with Istio's semantics (docs/contracts.md §5): pure, no I/O.

    policies = [parse_policy(doc) for doc in load_documents(text)]
    decision = evaluate(PolicySet.build(policies, MeshConfig()), parse_request(body)[0])

Errors: `Invalid` (a ValueError) with one `FieldError` (path + reason) per problem; its
subclasses `PolicyInvalid` and `RequestInvalid` say which input was at fault.
"""

from meshca.authz.decision import Decision, DryRunResult, PolicyExplanation
from meshca.authz.documents import load_documents, parse_policies
from meshca.authz.errors import FieldError, Invalid, PolicyInvalid, RequestInvalid
from meshca.authz.evaluate import evaluate
from meshca.authz.index import PolicySet
from meshca.authz.model import Action, AuthorizationPolicy, MeshConfig
from meshca.authz.parse import parse_policy
from meshca.authz.request import AuthzRequest, HttpAttributes, JwtAttributes, parse_mesh, parse_request

__all__ = [
    "Action", "AuthorizationPolicy", "AuthzRequest", "Decision", "DryRunResult", "FieldError",
    "HttpAttributes", "Invalid", "JwtAttributes", "MeshConfig", "PolicyExplanation", "PolicyInvalid",
    "PolicySet", "RequestInvalid", "evaluate", "load_documents", "parse_mesh", "parse_policies",
    "parse_policy", "parse_request",
]
