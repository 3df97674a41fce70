"""The peers `streamd demo` runs for its sinks, in its own event loop: an HTTP receiver
for the `http` sink (receiver.py) and an SFTP server for the `sftp` sink (sftp.py).
The providers' simulators live with their providers (`streamd.providers.*.simulator`).
"""
