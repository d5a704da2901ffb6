from cniprof.cli.main import main

raise SystemExit(main())
