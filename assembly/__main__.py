from assembly.cli.app import main

main()
