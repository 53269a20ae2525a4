"""The operators' web console under /ui/, and the API's own documentation page (/docs).

Pages are server-rendered shells that hold no data: a browser cannot send a bearer token when
it navigates, so each page's script reads the token from the tab's session storage and calls
the JSON API with it. Every route is in the role table (transport/rest/security.py)."""
