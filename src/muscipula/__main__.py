from muscipula.cli import main

raise SystemExit(main())
