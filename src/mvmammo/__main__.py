from mvmammo.cli import main

raise SystemExit(main())
