"""Implementation of jaxconv. Import from `jaxconv`, not from here."""
