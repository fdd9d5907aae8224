package main

func evalCommand() *command {
	return &command{name: "eval", summary: "score pseudo labels against ground truth (mIoU)", run: notBuilt("eval")}
}

func demoCommand() *command {
	return &command{name: "demo", summary: "synthesise, train, label and evaluate L2G against the CAM baseline", run: notBuilt("demo")}
}
