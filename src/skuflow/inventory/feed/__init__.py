"""The warehouse feed over FTP (CONTRACT section 4): files read as streams, imported whole or not at all."""
