"""Label-efficiency and convergence studies (Kalapos & Gyires-Toth 2022's two questions)."""
