from fraudrt.cli import main

main()
