"""Stand-ins for the outside world that `skuflow up` runs when none is configured: an SMTP sink (and, with
the FTP issue, a warehouse FTP server). Real servers speaking the real protocols, in this process."""
