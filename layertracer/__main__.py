from layertracer.cli import main

main()
