from demixer.cli import main

main()
