"""Protocol drivers. Each subpackage imports only its protocol library and ``drivers.base``."""
