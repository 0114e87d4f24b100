"""Test fixtures shared by the unit and e2e suites: OCI images built in code
(``oci_build``), a real Docker Distribution registry (``registry``), a Docker
token server (``token_server``) and the certificates and keys they use
(``certs``). Nothing here needs the internet."""
