from alexnet2012.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
