"""Raw datasets: nnU-Net v2 format plus imagesUnlabeled/, synthetic phantoms."""
