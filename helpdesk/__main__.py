from helpdesk.cli import main

if __name__ == "__main__":  # guarded: parse workers re-import the main module
    raise SystemExit(main())
