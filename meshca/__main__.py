from meshca.cli.main import main

raise SystemExit(main())
