"""One module per ``lungviewer`` command, each owning ``add_parser(sub)`` and ``run(args)``
(the pydicom ``cli/`` layout). Shared argument types live in :mod:`.common`."""
