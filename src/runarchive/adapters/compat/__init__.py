"""The adapters for the checkpointers runarchive replaces; imported as
:mod:`runarchive.compat` (its documented path, see ``docs/adapters.md``)."""
