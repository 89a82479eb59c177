from lungviewer.cli import main

raise SystemExit(main())
