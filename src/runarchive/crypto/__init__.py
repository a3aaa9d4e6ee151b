"""Client-side encryption: KEK providers (``providers``), the data keys of runs
(``keyring``) and what is sealed with them (``sealing``)."""
