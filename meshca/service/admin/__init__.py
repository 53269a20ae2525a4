"""The admin API's use cases, one module per resource, over the ports of service/admin_ports.py.

Routes (transport/rest/routes/) decode a request, call one of these and encode the result.
Every mutation goes to its port with the audit entry that records it, and the port writes
both in one transaction; a refused operator action is audited on its own.
"""
